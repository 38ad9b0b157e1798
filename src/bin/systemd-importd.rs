fn main() {
    std::process::exit(systemd_import::importd::main());
}
