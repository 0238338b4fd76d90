"""How a ckatlas process runs: CPU threads and the allocator (`ckatlas.runtime.cpu`), the device
a model and its data go to (`ckatlas.runtime.devices`) and seeding (`ckatlas.runtime.seeding`)."""
