fn main() {
    std::process::exit(systemd_import::importctl::main());
}
