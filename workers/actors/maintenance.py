from datetime import datetime
from functools import partial

import dramatiq

from workers import catchup, housekeeping
from workers.actors import job_actor


def send_run(name: str, slot: datetime) -> None:
    """Enqueue a run of job `name` for `slot`, through the broker like any other run."""
    dramatiq.get_broker().get_actor(name).send_with_options(
        kwargs={"scheduled_for": slot.isoformat()})


log_rotation = job_actor("log_rotation", housekeeping.log_rotation)
catch_up = job_actor("catch_up", partial(catchup.catch_up, send=send_run))
