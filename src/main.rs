fn main() {
    std::process::exit(systemd_import::import::cli::main());
}
