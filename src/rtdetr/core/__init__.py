"""The bottom layer: errors, image reading, size checks, atomic files, the weights cache, the CPU,
distributed helpers and the allocator. It imports nothing else of rtdetr."""
