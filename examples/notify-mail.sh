#!/bin/sh
# xdp-lb notify command: mails every change of a server's state, as mon's mail.alert did.
#
# Install it as the config's `notify.command` (an absolute path; chmod 755):
#     notify:
#       command: /etc/xdp-lb/notify-mail.sh
#       timeout: 10s
# The agent runs it with no arguments and these variables set:
#     XDP_LB_SERVICE    the service's name (video-hls)
#     XDP_LB_BACKEND    the server's address (10.0.0.11)
#     XDP_LB_ROLE       primary, backup or fallback
#     XDP_LB_OLD_STATE  up or down
#     XDP_LB_NEW_STATE  up or down
#     XDP_LB_REASON     what the last check saw ("connect: connection refused")
#     XDP_LB_TIME       when, in RFC 3339 UTC (2026-05-01T12:34:56Z)
# plus the agent's own environment. Set XDP_LB_MAILTO there (e.g. in the systemd unit) to
# choose the recipient; root by default. It needs a `mail` command (bsd-mailx or
# mailutils) and a working local MTA. A failure or a run longer than the timeout is
# logged by the agent as a warning and changes nothing else.
set -u

to="${XDP_LB_MAILTO:-root}"

mail -s "xdp-lb: $XDP_LB_BACKEND is $XDP_LB_NEW_STATE" "$to" <<MESSAGE
xdp-lb on $(hostname) saw a server change state.

service:  $XDP_LB_SERVICE
server:   $XDP_LB_BACKEND ($XDP_LB_ROLE)
state:    $XDP_LB_OLD_STATE -> $XDP_LB_NEW_STATE
reason:   $XDP_LB_REASON
time:     $XDP_LB_TIME

A server that is down gets no new viewers: its share goes to its backup if it has one,
else to the other servers (or to the fallback pool when none is left). It comes back on
its own after enough good checks.
MESSAGE
