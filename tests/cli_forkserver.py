"""Run an entry-point script once per request, each in a child forked from this process after the heavy imports.

test_errors checks a dozen bad inputs through the real command line; a fresh interpreter spends ~10 s per case
importing torch/lightning/transformers/datasets before it reaches the bad input. A forked child has them loaded
and then runs the script as `python SCRIPT ARGS...` would (its own argv, exit code, stdout and stderr), so each
case still proves "one line, exit 2". This process announces `ready` only after the imports, so the caller can
check that importing printed nothing a user would see on stderr.

Protocol: one JSON request per stdin line {"script", "args", "stdout", "stderr"} -> one JSON line {"returncode"}.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import traceback

import sumlab

sumlab.setup()  # first, as train.py and predict.py do

import sumlab.train.runner  # noqa: E402, F401 - what train.py's run imports, loaded once for every child


def _child(request: dict) -> int:
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.argv = [request["script"], *request["args"]]
    sys.path[0] = os.path.dirname(os.path.abspath(request["script"]))  # as `python SCRIPT` sets it
    try:
        runpy.run_path(request["script"], run_name="__main__")
        code = 0
    except SystemExit as ex:  # what the interpreter does with sys.exit's argument
        if ex.code is None or isinstance(ex.code, int):
            code = ex.code or 0
        else:
            print(ex.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - an uncaught exception: traceback and exit 1, as the interpreter does
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in iter(sys.stdin.readline, ""):
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os._exit(_child(request))
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
