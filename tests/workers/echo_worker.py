"""A worker for the protocol tests: doubles arrays; ``crash_first`` dies on its first call."""

import os

from fairsynth.verify.worker import serve


def make_handler(config):
    marker = config.get("crash_marker")

    def handle(header, array):
        if header.get("fail"):
            raise ValueError("asked to fail")
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)  # a hard crash mid-call, once
        return {"pid": os.getpid(), "n": 0 if array is None else len(array)}, array * 2

    return handle


if __name__ == "__main__":
    serve(make_handler)
