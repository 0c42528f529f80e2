use anyhow::Context as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = async {
        let env = faro_shared::Env::from_process();
        let config = faro_dispatcher::Config::from_env(&env).context("invalid configuration")?;
        faro_shared::telemetry::init("dispatcher", config.common.log_format);
        faro_dispatcher::run(config, faro_shared::shutdown::on_signal()).await
    }
    .await;
    faro_shared::service::exit_code("dispatcher", result)
}
