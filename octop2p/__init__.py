"""octop2p."""
