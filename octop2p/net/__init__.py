"""The networked node: peers, discovery, hosted jobs, the donor side, the control socket."""
