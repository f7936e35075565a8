/* The daemon's named D-Bus errors */
#pragma once

#include <systemd/sd-bus.h>

#define PORTPUB_ERROR_NO_SUCH_SANDBOX "io.portpub.Publisher1.Error.NoSuchSandbox"
#define PORTPUB_ERROR_NO_SUCH_PORT "io.portpub.Publisher1.Error.NoSuchPort"
#define PORTPUB_ERROR_PORT_IN_USE "io.portpub.Publisher1.Error.PortInUse"
#define PORTPUB_ERROR_ADDRESS_NOT_AVAILABLE "io.portpub.Publisher1.Error.AddressNotAvailable"
#define PORTPUB_ERROR_PERMISSION_DENIED "io.portpub.Publisher1.Error.PermissionDenied"
#define PORTPUB_ERROR_NO_GUEST_ADDRESS "io.portpub.Publisher1.Error.NoGuestAddress"
#define PORTPUB_ERROR_LIMIT_EXCEEDED "io.portpub.Publisher1.Error.LimitExceeded"

/* Maps the names above to errnos, so sd_bus_error_set_errno() and clients agree. */
extern const sd_bus_error_map portpub_error_map[];

int portpub_errors_register(void);
