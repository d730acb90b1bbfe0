//! Backend MAC resolution through the kernel's neighbour table (netlink).
