#!%SHELL:/bin/bash%
set -e          # stop the shell on first error
set -u          # fail when using an undefined variable
set -x          # echo script lines as they are executed
set -o pipefail # fail if the last (rightmost) command of a pipe fails

# The variables ecflow_client needs to talk to the server
export ECF_PORT=%ECF_PORT%    # the server port number
export ECF_HOST=%ECF_HOST%    # the host the server runs on
export ECF_NAME=%ECF_NAME%    # the name of this task
export ECF_PASS=%ECF_PASS%    # a unique password, for zombie detection
export ECF_TRYNO=%ECF_TRYNO%  # the current try number of the task
export ECF_RID=$$             # the process id, also used for zombie detection

# Where ecflow_client lives: client and server must be the same version
export PATH=/usr/local/apps/ecflow/%ECF_VERSION%/bin:$PATH

# Tell the server we have started
ecflow_client --init=$$

# The error handler: report the abort, then leave cleanly
ERROR() {
   set +e                          # do not fail inside the handler
   wait                            # wait for background processes
   ecflow_client --abort="${1:-trap}"  # tell the server, with a reason
   trap 0                          # remove the exit trap
   exit 0                          # the server already knows: end quietly
}

# A failing command (caught by set -e) aborts with its line and exit code
trap 'ERROR "line $LINENO failed with exit code $?"' ERR
# Any other way out before the tail also aborts
trap ERROR 0
# So does a signal
trap '{ echo "Killed by a signal"; ERROR signal; }' 1 2 3 4 5 6 7 8 10 12 13 15
