#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::startup::run_main::<payment_api::Config>().await
}
