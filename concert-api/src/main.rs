//! The concert-api binary: `serve` or `migrate`, configured from the environment.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::startup::run_main::<concert_api::Config>().await
}
