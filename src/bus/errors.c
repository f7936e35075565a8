/* The daemon's named D-Bus errors */
#include <errno.h>

#include "errors.h"

const sd_bus_error_map portpub_error_map[] = {
        SD_BUS_ERROR_MAP(PORTPUB_ERROR_NO_SUCH_SANDBOX, ENOENT),
        SD_BUS_ERROR_MAP(PORTPUB_ERROR_NO_SUCH_PORT, ENOENT),
        SD_BUS_ERROR_MAP(PORTPUB_ERROR_PORT_IN_USE, EADDRINUSE),
        SD_BUS_ERROR_MAP(PORTPUB_ERROR_ADDRESS_NOT_AVAILABLE, EADDRNOTAVAIL),
        SD_BUS_ERROR_MAP(PORTPUB_ERROR_PERMISSION_DENIED, EACCES),
        SD_BUS_ERROR_MAP(PORTPUB_ERROR_NO_GUEST_ADDRESS, EDESTADDRREQ),
        SD_BUS_ERROR_MAP(PORTPUB_ERROR_LIMIT_EXCEEDED, ENOSPC),
        SD_BUS_ERROR_MAP_END,
};

int portpub_errors_register(void) {
        return sd_bus_error_add_map(portpub_error_map);
}
