from workers import badges
from workers.actors import job_actor

badge_assignment = job_actor("badge_assignment", badges.badge_assignment)
