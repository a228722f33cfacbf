use clap::Parser;

fn main() {
    let cli = llm_harness::cli::Cli::parse();
    let code = match llm_harness::app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            llm_harness::app::exit_code(&e)
        }
    };
    std::process::exit(code);
}
