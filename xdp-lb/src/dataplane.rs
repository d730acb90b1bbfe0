//! Loading the program and writing its maps.
