# bash completion for portpubctl                                        -*- shell-script -*-
#
# Verbs, options, and from the running daemon the sandbox ids and published ports. It asks the
# daemon the options on the line pick (--user, --address=, --varlink), without polkit prompts
# and with its errors discarded; it needs no helpers of the bash-completion package.

# Runs portpubctl with the daemon options of the line and the arguments given; prints nothing
# but its standard output, and gives up after a few seconds.
__portpubctl_ask() {
        local -a timeout=()
        command -v timeout >/dev/null 2>&1 && timeout=(timeout 5)
        "${timeout[@]}" "${__portpubctl_prog:-portpubctl}" "${__portpubctl_daemon_opts[@]}" \
                --no-ask-password --no-legend "$@" </dev/null 2>/dev/null
}

__portpubctl_sandboxes() {
        __portpubctl_ask sandboxes | while read -r id _; do
                [[ -n $id ]] && printf '%s\n' "$id"
        done
}

# The published ports as PORT arguments: HOST/PROTO, e.g. [::1]:8080/tcp; of one sandbox if
# one is named.
__portpubctl_ports() {
        local sandbox=$1 s proto host _
        __portpubctl_ask list ${sandbox:+"$sandbox"} | while read -r s proto host _; do
                [[ -n $host && ( -z $sandbox || $s == "$sandbox" ) ]] &&
                        printf '%s\n' "$host/$proto"
        done
}

_portpubctl() {
        local -a verbs=(list sandboxes status publish unpublish remove set-guest show monitor)
        local -a global_opts=(-h --help --version --system --user --address= --varlink --varlink=
                --no-legend --no-ask-password --json)
        local -a publish_opts=(--guest= --max-sessions= --idle-timeout= --proxy-protocol=
                --bind-to-caller)
        local line=${COMP_LINE:0:COMP_POINT}
        local -a words=() args=() candidates=()
        local -a __portpubctl_daemon_opts=()
        local __portpubctl_prog cur prev='' verb='' w c i n breaks options_end=0

        # The line as the shell will split it into arguments: COMP_WORDS is split at ':' and
        # '=' too, which specs and options are full of.
        read -r -a words <<<"$line"
        [[ ${#words[@]} -eq 0 || $line == *[[:space:]] ]] && words+=("")
        cur=${words[${#words[@]} - 1]}
        __portpubctl_prog=${words[0]//[\"\']/}
        [[ $__portpubctl_prog == \~/* ]] && __portpubctl_prog=$HOME/${__portpubctl_prog#\~/}

        for ((i = 1; i < ${#words[@]} - 1; i++)); do
                w=${words[i]//[\"\']/}
                if ((options_end)) || [[ $w != -* ]]; then
                        if [[ -z $verb ]]; then verb=$w; else args+=("$w"); fi
                        prev=
                        continue
                fi
                case $w in
                --)
                        options_end=1 ;;
                --user | --system | --address=* | --varlink | --varlink=*)
                        __portpubctl_daemon_opts+=("$w") ;;
                --address | --guest | --max-sessions | --idle-timeout | --proxy-protocol)
                        # getopt takes the next argument as the value.
                        if ((i + 1 < ${#words[@]} - 1)); then
                                [[ $w == --address ]] &&
                                        __portpubctl_daemon_opts+=("$w=${words[i + 1]//[\"\']/}")
                                ((i++))
                        else
                                prev=$w
                        fi
                        continue ;;
                esac
                prev=
        done

        if [[ $prev == --proxy-protocol ]]; then
                candidates=(v1 v2)
        elif [[ -n $prev ]]; then
                candidates=()
        elif [[ $cur == --proxy-protocol=* ]]; then
                candidates=(--proxy-protocol=v1 --proxy-protocol=v2)
        elif [[ $cur == --varlink=* ]]; then
                while IFS= read -r c; do candidates+=("--varlink=$c"); done \
                        < <(compgen -f -- "${cur#--varlink=}")
        elif [[ $cur == -* && $options_end -eq 0 ]]; then
                if [[ -z $verb || $verb == publish ]]; then
                        candidates=("${global_opts[@]}" "${publish_opts[@]}")
                else
                        candidates=("${global_opts[@]}")
                fi
        elif [[ -z $verb ]]; then
                candidates=("${verbs[@]}")
        else
                case $verb in
                list | remove | status)
                        mapfile -t candidates < <(__portpubctl_sandboxes) ;;
                publish | set-guest)
                        ((${#args[@]} == 0)) && mapfile -t candidates < <(__portpubctl_sandboxes) ;;
                unpublish)
                        if ((${#args[@]} == 0)); then
                                mapfile -t candidates < <(__portpubctl_sandboxes)
                        else
                                # Each port once: not those already on the line.
                                while IFS= read -r c; do
                                        [[ " ${args[*]:1} " == *" $c "* ]] || candidates+=("$c")
                                done < <(__portpubctl_ports "${args[0]}")
                        fi ;;
                show)
                        ((${#args[@]} == 0)) && mapfile -t candidates < <(__portpubctl_ports) ;;
                esac
        fi

        # Readline replaces only what follows the last word break character of cur (':' of
        # [::1]:8080, '=' of --guest=).
        breaks=${COMP_WORDBREAKS-$' \t\n"\'@><=;|&(:'}
        n=0
        for ((i = ${#cur} - 1; i >= 0; i--)); do
                case $breaks in
                *"${cur:i:1}"*)
                        n=$((i + 1))
                        break ;;
                esac
        done
        COMPREPLY=()
        for c in "${candidates[@]}"; do
                [[ $c == "$cur"* ]] && COMPREPLY+=("${c:n}")
        done
        if ((${#COMPREPLY[@]} == 1)) && [[ ${COMPREPLY[0]} == *= ]]; then
                compopt -o nospace 2>/dev/null
        fi
        return 0
}

complete -F _portpubctl portpubctl
