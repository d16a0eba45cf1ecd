"""Guest contextualisation: the cloud-init NoCloud ``cidata`` seed given to every VM."""

from site_agent.context.cidata import ContextSeed, NetworkConfig, write_cidata_iso

__all__ = ["ContextSeed", "NetworkConfig", "write_cidata_iso"]
