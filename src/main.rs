//! The `systemd-import` binary: everything is in the library, from its command line
//! (`systemd_import::import::cli`) down.

fn main() {
    std::process::exit(systemd_import::import::cli::main());
}
