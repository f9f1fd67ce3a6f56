"""The cluster: what the boxes of one deployment agree on (the store), who they are (nodes), the
certificate they share, and the media trunks that carry a track from box to box."""
