"""What machines boot from and write to: the image cache (`images`: download, verify,
decompress, qemu-img copies and overlays) and each node's volumes (`volumes`)."""
