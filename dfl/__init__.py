"""dfl: a decentralized federated learning simulator (DFedSAM and the SAM family over gossip graphs)."""
__version__ = "0.1.0"
