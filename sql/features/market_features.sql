-- Market features for MASTER's gate, one row per index trading day, one column group per
-- index, as the MASTER reference computes its 63 market features (SJTU-DMTai/MASTER,
-- data/csi_market_information.csv header: Qlib expressions per index and w in 5, 10, 20, 30, 60):
--   {index}_ret                 $close/Ref($close,1)-1               close-to-close return
--   {index}_ret_mean_{w}        Mean($close/Ref($close,1)-1, w)
--   {index}_ret_std_{w}         Std($close/Ref($close,1)-1, w)
--   {index}_vol_mean_rel_{w}    Mean($amount, w)/$amount   (with volume in the amount's place)
--   {index}_vol_std_rel_{w}     Std($amount, w)/$amount    (with volume in the amount's place)
-- Every input is scale-free (a return, or a window statistic over today's value), so a test day
-- whose market trades far more than the training years did is not pushed out of range by the
-- train-fitted normalisation. Deviation: index_prices has no amount (turnover in money), so the
-- index volume stands in for it; the two ratios are both relative to today, so they differ only
-- by how the price level moves within the window.
-- NULL until the window is full (w returns need w + 1 rows; w volumes need w rows), and where
-- today's volume is 0. Std is the sample std (ddof 1), as Qlib's Std.
CREATE OR REPLACE TABLE market_features AS
WITH r AS (
    SELECT index_name, date, volume AS vol,
        close / lag(close) OVER (PARTITION BY index_name ORDER BY date) - 1 AS ret,
        CAST(row_number() OVER (PARTITION BY index_name ORDER BY date) AS INTEGER) AS x
    FROM index_prices
),
long AS (
    SELECT index_name, date, ret,
        CASE WHEN x > 5 THEN avg(ret) OVER w5 END AS ret_mean_5,
        CASE WHEN x > 5 THEN stddev_samp(ret) OVER w5 END AS ret_std_5,
        CASE WHEN x >= 5 THEN avg(vol) OVER w5 / nullif(vol, 0) END AS vol_mean_rel_5,
        CASE WHEN x >= 5 THEN stddev_samp(vol) OVER w5 / nullif(vol, 0) END AS vol_std_rel_5,
        CASE WHEN x > 10 THEN avg(ret) OVER w10 END AS ret_mean_10,
        CASE WHEN x > 10 THEN stddev_samp(ret) OVER w10 END AS ret_std_10,
        CASE WHEN x >= 10 THEN avg(vol) OVER w10 / nullif(vol, 0) END AS vol_mean_rel_10,
        CASE WHEN x >= 10 THEN stddev_samp(vol) OVER w10 / nullif(vol, 0) END AS vol_std_rel_10,
        CASE WHEN x > 20 THEN avg(ret) OVER w20 END AS ret_mean_20,
        CASE WHEN x > 20 THEN stddev_samp(ret) OVER w20 END AS ret_std_20,
        CASE WHEN x >= 20 THEN avg(vol) OVER w20 / nullif(vol, 0) END AS vol_mean_rel_20,
        CASE WHEN x >= 20 THEN stddev_samp(vol) OVER w20 / nullif(vol, 0) END AS vol_std_rel_20,
        CASE WHEN x > 30 THEN avg(ret) OVER w30 END AS ret_mean_30,
        CASE WHEN x > 30 THEN stddev_samp(ret) OVER w30 END AS ret_std_30,
        CASE WHEN x >= 30 THEN avg(vol) OVER w30 / nullif(vol, 0) END AS vol_mean_rel_30,
        CASE WHEN x >= 30 THEN stddev_samp(vol) OVER w30 / nullif(vol, 0) END AS vol_std_rel_30,
        CASE WHEN x > 60 THEN avg(ret) OVER w60 END AS ret_mean_60,
        CASE WHEN x > 60 THEN stddev_samp(ret) OVER w60 END AS ret_std_60,
        CASE WHEN x >= 60 THEN avg(vol) OVER w60 / nullif(vol, 0) END AS vol_mean_rel_60,
        CASE WHEN x >= 60 THEN stddev_samp(vol) OVER w60 / nullif(vol, 0) END AS vol_std_rel_60
    FROM r
    WINDOW
        w5 AS (PARTITION BY index_name ORDER BY date ROWS BETWEEN 4 PRECEDING AND CURRENT ROW),
        w10 AS (PARTITION BY index_name ORDER BY date ROWS BETWEEN 9 PRECEDING AND CURRENT ROW),
        w20 AS (PARTITION BY index_name ORDER BY date ROWS BETWEEN 19 PRECEDING AND CURRENT ROW),
        w30 AS (PARTITION BY index_name ORDER BY date ROWS BETWEEN 29 PRECEDING AND CURRENT ROW),
        w60 AS (PARTITION BY index_name ORDER BY date ROWS BETWEEN 59 PRECEDING AND CURRENT ROW)
)
PIVOT long ON index_name
USING first(ret) AS ret,
    first(ret_mean_5) AS ret_mean_5, first(ret_std_5) AS ret_std_5,
    first(vol_mean_rel_5) AS vol_mean_rel_5, first(vol_std_rel_5) AS vol_std_rel_5,
    first(ret_mean_10) AS ret_mean_10, first(ret_std_10) AS ret_std_10,
    first(vol_mean_rel_10) AS vol_mean_rel_10, first(vol_std_rel_10) AS vol_std_rel_10,
    first(ret_mean_20) AS ret_mean_20, first(ret_std_20) AS ret_std_20,
    first(vol_mean_rel_20) AS vol_mean_rel_20, first(vol_std_rel_20) AS vol_std_rel_20,
    first(ret_mean_30) AS ret_mean_30, first(ret_std_30) AS ret_std_30,
    first(vol_mean_rel_30) AS vol_mean_rel_30, first(vol_std_rel_30) AS vol_std_rel_30,
    first(ret_mean_60) AS ret_mean_60, first(ret_std_60) AS ret_std_60,
    first(vol_mean_rel_60) AS vol_mean_rel_60, first(vol_std_rel_60) AS vol_std_rel_60
GROUP BY date
ORDER BY date
