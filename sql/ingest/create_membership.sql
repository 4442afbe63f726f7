-- Point-in-time index constituents; [start_date, end_date] inclusive.
CREATE TABLE IF NOT EXISTS membership (
    index_name VARCHAR NOT NULL,
    instrument VARCHAR NOT NULL,
    start_date DATE NOT NULL,
    end_date DATE NOT NULL
)
