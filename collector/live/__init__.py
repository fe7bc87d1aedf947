"""Live view: sessions, the follower of live updates, playlists, the reaper and the janitor."""
