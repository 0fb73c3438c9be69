"""Client of a running federation (layer: client): ``connect(address, ...)`` → Federation.

Example::

    import privcomp.client as pcc
    fed = pcc.connect("127.0.0.1:7000", pki_dir="pki", analyst="alice")
    fed.parties()                      # names and schemas only
    job = fed.submit("job.yaml")       # JobSpec, dict or YAML path
    job.watch()                        # tqdm progress bar
    job.result()                       # {"mean": array(...), ...}

The implementation lives in :mod:`privcomp.rpc.client` (the only layer that touches the
generated protobuf code); this module is the public façade.
"""

from __future__ import annotations

from privcomp.jobs.model import JobSpec, JobState
from privcomp.rpc.client import Federation, Job, JobInfo, PartySummary, connect

__all__ = ["Federation", "Job", "JobInfo", "JobSpec", "JobState", "PartySummary", "connect"]
