"""What an operator sees: usage figures kept for the last hour (usage.py, sans-I/O), what the box's
counters read now (readings.py), the dashboard's live snapshot (snapshot.py), and the HTTP routes
behind `[api] admin_token` (routes.py): /dashboard, /dashboard/events and /v1/usage."""
