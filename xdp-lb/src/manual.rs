//! `xdp-lb completions SHELL` and `xdp-lb man`: the shell completions and the man page,
//! generated from the command line's own definition so they never drift from it.
//! `cargo xtask install` and `cargo xtask deb` run them; they are hidden from `--help`.

use std::io::{self, Write as _};

use clap::{CommandFactory, ValueEnum};

/// The shells completions are generated for (the ones Debian packages ship them for).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the completion script for `shell` to standard output.
pub fn completions<C: CommandFactory>(shell: Shell) -> io::Result<()> {
    let mut command = C::command();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Generated into memory: clap_complete panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(generator, &mut command, "xdp-lb", &mut script);
    let mut out = io::stdout().lock();
    out.write_all(&script)?;
    out.flush()
}

/// Writes the man page (section 8: a system administration command) to standard output.
pub fn man<C: CommandFactory>() -> io::Result<()> {
    let command = C::command().name("xdp-lb");
    let mut out = io::stdout().lock();
    clap_mangen::Man::new(command)
        .section("8")
        .render(&mut out)?;
    out.flush()
}
