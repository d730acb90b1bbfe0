//! `xdp-lb-bench [--quick] [--agent PATH] [--root DIR]`: the benchmarks behind
//! `cargo xtask bench` (see `xdp_lb_tests::bench`). Writes BENCHMARKS.md, BENCHMARKS.json and
//! the charts under DIR (default: the current directory). Exits 1 on an error.

fn main() {
    if let Err(err) = xdp_lb_tests::bench::main_with_args(std::env::args().skip(1)) {
        eprintln!("xdp-lb-bench: {err:#}");
        std::process::exit(1);
    }
}
