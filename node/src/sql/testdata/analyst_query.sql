-- Quarterly revenue review: orders joined to customers, per region and segment, with
-- rankings, running totals, cohort shares and flags for the review meeting.
WITH
    -- Orders of the period, with their quarter and a size band.
    period_orders AS (
        SELECT
            o.order_id,
            o.customer_id,
            o.region,
            o.amount,
            o.day,
            o.status,
            date_trunc('quarter', CAST(o.day AS TIMESTAMP)) AS quarter,
            CASE
                WHEN o.amount >= 1000 THEN 'large'
                WHEN o.amount >= 250 THEN 'medium'
                WHEN o.amount >= 50 THEN 'small'
                ELSE 'tiny'
            END AS size_band,
            CASE o.status
                WHEN 'shipped' THEN 1
                WHEN 'delivered' THEN 1
                WHEN 'returned' THEN -1
                ELSE 0
            END AS counted
        FROM "sales/orders" AS o
        WHERE o.day >= DATE '2020-01-01'
          AND o.day < DATE '2030-01-01'
          AND o.status IN ('shipped', 'delivered', 'returned', 'pending')
          AND o.amount IS NOT NULL
    ),
    -- Customers with a cleaned-up segment and the year they signed up.
    customer_segments AS (
        SELECT
            c.customer_id,
            c.name,
            COALESCE(NULLIF(trim(c.segment), ''), 'unknown') AS segment,
            upper(c.country) AS country,
            CAST(date_part('year', c.signup) AS BIGINT) AS cohort,
            CASE
                WHEN c.country IN ('DE', 'FR', 'IT', 'ES', 'NL') THEN 'EU'
                WHEN c.country IN ('US', 'CA', 'MX') THEN 'NA'
                WHEN c.country IN ('JP', 'KR', 'SG', 'AU') THEN 'APAC'
                ELSE 'other'
            END AS market
        FROM "sales/customers" AS c
        WHERE c.customer_id IS NOT NULL
    ),
    -- One row per order with its customer.
    enriched AS (
        SELECT
            p.order_id,
            p.customer_id,
            p.region,
            p.amount,
            p.day,
            p.quarter,
            p.size_band,
            p.counted,
            s.name,
            s.segment,
            s.country,
            s.cohort,
            s.market,
            p.amount * p.counted AS net_amount,
            CASE
                WHEN s.market = p.region THEN 'home'
                WHEN s.market = 'other' THEN 'unknown'
                ELSE 'cross-border'
            END AS channel
        FROM period_orders AS p
        LEFT JOIN customer_segments AS s ON s.customer_id = p.customer_id
    ),
    -- Revenue per region, segment and quarter.
    region_segment AS (
        SELECT
            region,
            segment,
            quarter,
            count(*) AS orders,
            count(DISTINCT customer_id) AS customers,
            sum(net_amount) AS revenue,
            avg(amount) AS average_order,
            min(amount) AS smallest_order,
            max(amount) AS largest_order,
            sum(CASE WHEN size_band = 'large' THEN net_amount ELSE 0 END) AS large_revenue,
            sum(CASE WHEN channel = 'cross-border' THEN 1 ELSE 0 END) AS cross_border_orders,
            sum(CASE WHEN counted < 0 THEN amount ELSE 0 END) AS returned_amount
        FROM enriched
        GROUP BY region, segment, quarter
        HAVING count(*) > 0
    ),
    -- Rankings and running totals within each region.
    ranked AS (
        SELECT
            r.*,
            rank() OVER (PARTITION BY r.region, r.quarter ORDER BY r.revenue DESC) AS revenue_rank,
            row_number() OVER (PARTITION BY r.region ORDER BY r.quarter, r.segment) AS row_in_region,
            sum(r.revenue) OVER (
                PARTITION BY r.region
                ORDER BY r.quarter
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
            ) AS running_revenue,
            lag(r.revenue, 1) OVER (PARTITION BY r.region, r.segment ORDER BY r.quarter) AS previous_revenue,
            r.revenue / NULLIF(sum(r.revenue) OVER (PARTITION BY r.region, r.quarter), 0) AS share_of_region
        FROM region_segment AS r
    ),
    -- Customers' first orders, for the cohort view.
    first_orders AS (
        SELECT customer_id, min(day) AS first_day, count(*) AS lifetime_orders
        FROM enriched
        GROUP BY customer_id
    ),
    cohorts AS (
        SELECT
            e.cohort,
            e.market,
            count(DISTINCT e.customer_id) AS customers,
            sum(e.net_amount) AS revenue,
            avg(f.lifetime_orders) AS orders_per_customer
        FROM enriched AS e
        JOIN first_orders AS f ON f.customer_id = e.customer_id
        WHERE e.cohort IS NOT NULL
        GROUP BY e.cohort, e.market
    ),
    -- The largest customers per region.
    top_customers AS (
        SELECT region, customer_id, name, total
        FROM (
            SELECT
                region,
                customer_id,
                name,
                sum(net_amount) AS total,
                row_number() OVER (PARTITION BY region ORDER BY sum(net_amount) DESC) AS place
            FROM enriched
            GROUP BY region, customer_id, name
        ) AS t
        WHERE place <= 3
    )
SELECT
    'segment' AS view,
    k.region AS region,
    k.segment AS label,
    CAST(k.quarter AS VARCHAR) AS period,
    k.orders AS orders,
    k.revenue AS revenue,
    k.running_revenue AS running_revenue,
    k.share_of_region AS share,
    CASE
        WHEN k.previous_revenue IS NULL THEN 'new'
        WHEN k.revenue > k.previous_revenue * 1.1 THEN 'growing'
        WHEN k.revenue < k.previous_revenue * 0.9 THEN 'shrinking'
        ELSE 'steady'
    END AS trend,
    CASE
        WHEN k.returned_amount > k.revenue * 0.2 THEN 'check returns'
        WHEN k.cross_border_orders > k.orders / 2 THEN 'mostly cross-border'
        WHEN k.revenue_rank = 1 THEN 'leader'
        ELSE ''
    END AS flag
FROM ranked AS k
WHERE k.revenue_rank <= 5
   OR k.share_of_region >= 0.25
   OR (k.large_revenue > 0 AND k.average_order BETWEEN 100 AND 5000)
UNION ALL
SELECT
    'cohort',
    c.market,
    CAST(c.cohort AS VARCHAR),
    NULL,
    c.customers,
    c.revenue,
    NULL,
    c.revenue / NULLIF((SELECT sum(revenue) FROM cohorts), 0),
    CASE WHEN c.orders_per_customer >= 2 THEN 'returning' ELSE 'one-off' END,
    ''
FROM cohorts AS c
WHERE c.revenue IS NOT NULL
UNION ALL
SELECT
    'customer',
    t.region,
    COALESCE(t.name, CAST(t.customer_id AS VARCHAR)),
    NULL,
    NULL,
    t.total,
    NULL,
    NULL,
    'top',
    CASE
        WHEN t.total > (SELECT avg(total) FROM top_customers) THEN 'above average'
        ELSE ''
    END
FROM top_customers AS t
WHERE EXISTS (SELECT 1 FROM enriched AS e WHERE e.customer_id = t.customer_id AND e.counted > 0)
  AND t.customer_id NOT IN (SELECT customer_id FROM first_orders WHERE lifetime_orders < 1)
ORDER BY 1, 2, 3, 4
LIMIT 1000
