"""The restore engine: CapyDB's restore surface running in this process (embedded mode)
or behind ``capy serve``. Never imports Pulumi, the server or the resources."""

from pulumi_capy.engine.clock import Clock, ManualClock, SystemClock
from pulumi_capy.engine.queue import JobRetryPolicy
from pulumi_capy.engine.service import Engine

__all__ = ["Clock", "Engine", "JobRetryPolicy", "ManualClock", "SystemClock"]
