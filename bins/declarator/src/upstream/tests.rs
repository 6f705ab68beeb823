use super::*;

#[tokio::test]
async fn upstream_sockets_have_tcp_keepalive_and_a_user_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let timeout = Duration::from_secs(6);
    let stream = connect_tcp("pool test", &address, timeout).await.unwrap();
    let socket = socket2::SockRef::from(&stream);
    assert!(socket.keepalive().unwrap(), "SO_KEEPALIVE is off");
    assert_eq!(socket.tcp_keepalive_time().unwrap(), timeout);
    assert_eq!(
        socket.tcp_keepalive_interval().unwrap(),
        Duration::from_secs(2)
    );
    assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
    #[cfg(target_os = "linux")]
    assert_eq!(
        socket.tcp_user_timeout().unwrap(),
        Some(Duration::from_secs(12))
    );
    assert!(socket.tcp_nodelay().unwrap());
}

#[tokio::test]
async fn a_refused_connection_names_the_upstream_and_is_a_lost_connection() {
    let address = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let e = connect_tcp("jds x", &address, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::Connect { .. }), "{e}");
    assert!(e.to_string().starts_with("jds x: cannot connect"), "{e}");
    assert!(matches!(e.trigger(), fallback::Trigger::Disconnected(_)));
}

#[test]
fn connection_errors_are_their_fallback_triggers() {
    use fallback::Trigger;
    let up = || "pool 127.0.0.1:1".to_string();
    let cases = [
        (
            UpstreamError::SetupRefused {
                upstream: up(),
                code: "unsupported-feature-flags".into(),
                flags: 1,
            },
            "SetupConnection refused",
        ),
        (
            UpstreamError::ChannelRefused {
                upstream: up(),
                code: "unknown-user".into(),
            },
            "channel refused",
        ),
        (
            UpstreamError::ExtranonceTooSmall {
                upstream: up(),
                got: 9,
                need: 10,
            },
            "extranonce too small",
        ),
        (
            UpstreamError::Timeout {
                upstream: up(),
                waiting_for: "SetCustomMiningJob",
                timeout: Duration::from_secs(5),
            },
            "timed out",
        ),
        (
            UpstreamError::Protocol {
                upstream: up(),
                detail: "bad frame".into(),
            },
            "connection lost",
        ),
    ];
    for (error, text) in cases {
        let trigger = error.trigger();
        let ok = match &error {
            UpstreamError::SetupRefused { .. } => matches!(trigger, Trigger::SetupRefused(_)),
            UpstreamError::ChannelRefused { .. } => matches!(trigger, Trigger::ChannelRefused(_)),
            UpstreamError::ExtranonceTooSmall { .. } => {
                matches!(trigger, Trigger::ExtranonceTooSmall(_))
            }
            UpstreamError::Timeout { .. } => matches!(trigger, Trigger::Timeout(_)),
            _ => matches!(trigger, Trigger::Disconnected(_)),
        };
        assert!(ok, "{error} became {trigger:?}");
        let shown = trigger.to_string();
        assert!(shown.starts_with(text), "{shown}");
        assert!(shown.contains("pool 127.0.0.1:1"), "{shown}");
    }
}

#[test]
fn a_read_timed_out_by_keepalive_is_a_timeout() {
    let gone = Sv2Error::Io(std::io::Error::from(std::io::ErrorKind::TimedOut));
    let e = UpstreamError::from_read("pool p", &gone, Duration::from_secs(5));
    assert!(matches!(e.trigger(), fallback::Trigger::Timeout(_)), "{e}");
    let reset = Sv2Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    let e = UpstreamError::from_read("pool p", &reset, Duration::from_secs(5));
    assert!(matches!(e.trigger(), fallback::Trigger::Disconnected(_)));
}

#[test]
fn reject_limits_come_from_the_config_and_bad_values_name_their_key() {
    let mut config = jdc_shared::config::DeclaratorConfig::default();
    assert_eq!(
        reject_limits(&config).unwrap(),
        fallback::RejectLimits {
            window: 50,
            max_fraction: 0.5
        }
    );
    config.upstream_reject_window = 20;
    config.upstream_reject_max_fraction = 1.0;
    assert_eq!(
        reject_limits(&config).unwrap(),
        fallback::RejectLimits {
            window: 20,
            max_fraction: 1.0
        }
    );
    for window in [0, MAX_REJECT_WINDOW + 1] {
        config.upstream_reject_window = window;
        let e = reject_limits(&config).unwrap_err();
        assert!(
            e.to_string().contains("declarator.upstream_reject_window"),
            "{e}"
        );
    }
    config.upstream_reject_window = 50;
    for fraction in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
        config.upstream_reject_max_fraction = fraction;
        let e = reject_limits(&config).unwrap_err();
        assert!(
            e.to_string()
                .contains("declarator.upstream_reject_max_fraction"),
            "{fraction}: {e}"
        );
    }
}
