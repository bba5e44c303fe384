"""Local, protocol-faithful fakes of FCM, APNs, Web Push and SMTP, shipped for tests, the demo and bench.

    from devtools.fakes import FakeProviders
    fakes = FakeProviders(Path("/tmp/fakes")).start_in_thread()
    os.environ.update(fakes.env())          # herald now sends to the fakes
    fakes.providers["fcm"].switches.dead_tokens.add("old-token")

``herald fakes serve`` runs them in the foreground and prints their URLs and environment.
"""

from devtools.fakes.server import FakeProviders
from devtools.fakes.state import Provider, Switches

__all__ = ["FakeProviders", "Provider", "Switches"]
