from workers import presence
from workers.actors import job_actor

presence_cleanup = job_actor("presence_cleanup", presence.presence_cleanup)
