"""The ecFlow side's client: ecFlow's Python API, driven over stdin/stdout.

Run by Debian's ``/usr/bin/python3``, the only interpreter that has the
``ecflow`` module; it imports nothing from takler. One JSON request a line
on stdin ({"op": name, ...args}), one JSON reply a line on stdout
({"ok": true, "result": ...} or {"ok": false, "error": text}). Times are
taken here, around the ecFlow calls themselves. Every loop is bounded.

    /usr/bin/python3 ecflow_agent.py HOST PORT
"""

import json
import sys
import time

import ecflow


class Agent:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.client = self._client()

    def _client(self):
        client = ecflow.Client(self.host, str(self.port))
        client.set_connection_attempts(1)
        client.set_retry_connection_period(0)
        return client

    def op_ping(self):
        self.client.ping()

    def op_wait_up(self, timeout=30.0, suite=None):
        """Seconds until the server answers ping (and holds ``suite``)."""
        t0 = time.monotonic()
        for _ in range(int(timeout / 0.005) + 1):
            try:
                self.client.ping()
                if suite is None or self.client.query("state", "/" + suite):
                    return time.monotonic() - t0
            except RuntimeError:
                pass
            if time.monotonic() - t0 > timeout:
                break
            time.sleep(0.005)
        raise RuntimeError(f"ecflow_server did not answer within {timeout} s")

    def op_restart(self):
        self.client.restart_server()

    def op_stop(self):
        self.client.halt_server()
        self.client.terminate_server()

    def op_load(self, path):
        """Parse the .def here (not timed), then time ``load(defs)``."""
        defs = ecflow.Defs(path)
        t0 = time.perf_counter()
        self.client.load(defs)
        return time.perf_counter() - t0

    def op_delete(self, suite):
        t0 = time.perf_counter()
        self.client.delete("/" + suite, True)
        return time.perf_counter() - t0

    def op_run(self, suite, poll, max_wait=900.0, limit=False):
        """Begin the suite; poll its state until complete (or aborted)."""
        t0 = time.monotonic()
        self.client.begin_suite(suite)
        begun = time.monotonic() - t0
        state, polls, max_limit = None, 0, 0
        for _ in range(int(max_wait / poll) + 1):
            polls += 1
            time.sleep(poll)
            state = self.client.query("state", "/" + suite)
            if limit:
                max_limit = max(max_limit, int(self.client.query("limit", "/" + suite, "L")))
            if state in ("complete", "aborted") or time.monotonic() - t0 > max_wait:
                break
        return {
            "wall_s": time.monotonic() - t0,
            "begin_s": begun,
            "state": state,
            "polls": polls,
            "max_limit": max_limit if limit else None,
        }

    def op_count_complete(self, suite):
        self.client.sync_local()
        prefix = "/" + suite + "/"
        return sum(
            1
            for t in self.client.get_defs().get_all_tasks()
            if t.get_abs_node_path().startswith(prefix) and str(t.get_state()) == "complete"
        )

    def op_ping_n(self, n):
        self.client.ping()
        return self._timed(self.client.ping, n)

    def op_get_defs_n(self, n):
        """The full state, always a full transfer (``get_server_defs``)."""
        self.client.get_server_defs()
        return self._timed(self.client.get_server_defs, n)

    def op_check_pt(self):
        t0 = time.perf_counter()
        self.client.checkpt()
        return time.perf_counter() - t0

    def op_alter_label_n(self, path, n):
        """``n`` label changes in a row (the counterpart of the store on/off test)."""
        t0 = time.perf_counter()
        for i in range(n):
            self.client.alter(path, "change", "label", "info", str(i))
        return time.perf_counter() - t0

    @staticmethod
    def _timed(fn, n):
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out


def main():
    agent = Agent(sys.argv[1], sys.argv[2])
    for line in sys.stdin:
        request = json.loads(line)
        op = getattr(agent, "op_" + request.pop("op"), None)
        try:
            if op is None:
                raise ValueError("unknown op")
            reply = {"ok": True, "result": op(**request)}
        except (RuntimeError, ValueError, TypeError) as e:
            reply = {"ok": False, "error": str(e)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
