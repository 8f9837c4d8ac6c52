# twistd plugin: `twistd aiwg --project DIR`. Imports nothing of ours until used.
from twisted.application.service import ServiceMaker

aiwg = ServiceMaker(
    "aiwg daemon",
    "aiwg.daemon.tap",
    "Per-project daemon supervising AI coding agents",
    "aiwg",
)
