"""Evidence clips: shared RTSP sessions, pre-roll, fragmented MP4 capture, thumbnails, signed manifests."""
