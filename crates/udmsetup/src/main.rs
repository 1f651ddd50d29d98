//! The udmsetup binary: a thin shell over the library.

fn main() {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let stdin = std::io::stdin();
    let code = udmsetup::run(
        std::env::args_os(),
        &mut stdout.lock(),
        &mut stderr.lock(),
        &mut stdin.lock(),
    );
    std::process::exit(code);
}
