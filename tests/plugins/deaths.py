"""Monitors that kill the pump they run in, to test what a pump's death leaves behind:
named as ``plugins.deaths:Class``."""

import os

import immortal


class DieInExit(immortal.Monitor):
    """The first ``exit`` (across pumps: ``options["once"]`` is a marker file) ends the pump
    at once, as a monitor that crashes the interpreter would."""

    def exit(self, status):
        try:
            fd = os.open(self.options["once"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(70)


class Threaded(immortal.Monitor):
    """Runs a thread of its own in the pump, as a monitor that sends events out might."""

    def setup(self, why, message):
        import threading

        threading.Thread(target=threading.Event().wait, daemon=True).start()


class SlowSetup(immortal.Monitor):
    """A pump's successor takes ``options["delay"]`` seconds in ``setup`` (a first start
    does not), having made the file ``options["mark"]`` as it begins."""

    def setup(self, why, message):
        if why == "pump start":
            return
        import time

        open(self.options["mark"], "a").close()
        time.sleep(self.options["delay"])  # the window a test kills the daemon in
