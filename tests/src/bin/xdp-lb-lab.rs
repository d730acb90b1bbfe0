//! `xdp-lb-lab --agent PATH [--once]`: the lab demo behind `cargo xtask run` (see
//! `xdp_lb_tests::demo`). Exits 0 after tearing the lab down, 1 on an error.

fn main() {
    if let Err(err) = xdp_lb_tests::demo::main_with_args(std::env::args().skip(1)) {
        eprintln!("xdp-lb-lab: {err:#}");
        std::process::exit(1);
    }
}
