CREATE TABLE IF NOT EXISTS predictions (
    date        DATE      NOT NULL,  -- signal date t: features up to t; act at t+1's average price
    instrument  VARCHAR   NOT NULL,
    model       VARCHAR   NOT NULL,
    stockset    VARCHAR   NOT NULL,
    score       DOUBLE    NOT NULL,
    run_id      VARCHAR   NOT NULL,
    model_version VARCHAR NOT NULL,
    created_at  TIMESTAMP NOT NULL
)
