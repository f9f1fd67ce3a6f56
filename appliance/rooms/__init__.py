"""Rooms for the meeting page (/meet/{room}): who is in a room and what each person publishes, shared by
every box through the cluster store and pushed to pages over a WebSocket. Rooms are not a Calls
concept: media flows through ordinary Calls sessions; a room only tells its people each other's
sessions and track names."""
