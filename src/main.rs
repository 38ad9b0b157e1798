fn main() {
    std::process::exit(systemd_import::cli::main());
}
