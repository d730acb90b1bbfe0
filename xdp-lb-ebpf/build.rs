use which::which;

/// Rebuild the program when bpf-linker changes (aya-template does the same).
fn main() {
    if let Ok(bpf_linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
