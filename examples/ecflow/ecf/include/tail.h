wait                      # wait for background processes
ecflow_client --complete  # tell the server we finished normally
trap 0                    # remove all traps
exit 0                    # end the shell
