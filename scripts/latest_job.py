"""Print the id of the newest job named argv[1] from `nasforge list --json` on stdin."""

import json
import sys

jobs = [j for j in json.load(sys.stdin) if j["name"] == sys.argv[1] and j["state"] == "done"]
if not jobs:
    sys.exit(f"no finished job named {sys.argv[1]!r}")
print(max(jobs, key=lambda j: j["created_at"])["job_id"])
