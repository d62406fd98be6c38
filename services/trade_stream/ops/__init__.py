"""Operations: health, supervision, metrics, systemd notify, logs and the `check` tool."""
