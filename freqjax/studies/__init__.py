"""Studies: experiments made of several runs (each a workdir of its own)."""
