//! SQL for a validated [`Query`]. Column and function names come only from
//! the `match`es below; every value a client sent travels as a bound
//! parameter.

use super::request::{Dimension, FilterOp, Metric, Query};

pub fn dimension_expr(d: Dimension) -> &'static str {
    match d {
        Dimension::Page => "page",
        Dimension::Country => "country",
        Dimension::Region => "region",
        Dimension::Browser => "browser",
        Dimension::Os => "os",
        Dimension::Device => "device",
        Dimension::Source => "source",
        Dimension::Day => "toString(toDate(hour, ?))",
    }
}

pub fn metric_expr(m: Metric) -> &'static str {
    match m {
        Metric::Visitors => "toFloat64(uniqIfMerge(visitors))",
        Metric::Visits => "toFloat64(sumMerge(visits))",
        Metric::Pageviews => "toFloat64(sumMerge(pageviews))",
    }
}

/// The statement and its parameters, in `?` order. Visitors and pageviews
/// are always computed last, for small-count suppression.
pub fn build(query: &Query, timezone: &str) -> (String, Vec<String>) {
    let mut params = Vec::new();
    let mut dims = Vec::new();
    for d in &query.dimensions {
        dims.push(dimension_expr(*d));
        if d.is_time() {
            params.push(timezone.to_string());
        }
    }
    let dims_sql = if dims.is_empty() {
        "emptyArrayString()".to_string()
    } else {
        format!("[{}]", dims.join(", "))
    };
    let mut metrics: Vec<&str> = query.metrics.iter().map(|m| metric_expr(*m)).collect();
    metrics.push(metric_expr(Metric::Visitors));
    metrics.push(metric_expr(Metric::Pageviews));

    let mut sql = format!(
        "SELECT {dims_sql} AS dims, [{}] AS metrics FROM traffic_hourly \
         WHERE site_id = ? AND hour >= toDateTime(?) AND hour < toDateTime(?)",
        metrics.join(", ")
    );
    params.push(query.site_id.clone());
    params.push(query.from.timestamp().to_string());
    params.push(query.to.timestamp().to_string());
    for filter in &query.filters {
        let column = dimension_expr(filter.dimension);
        let placeholders = vec!["?"; filter.values.len()].join(", ");
        match filter.op {
            FilterOp::Is => sql.push_str(&format!(" AND {column} IN ({placeholders})")),
            FilterOp::IsNot => sql.push_str(&format!(" AND {column} NOT IN ({placeholders})")),
            FilterOp::Contains => {
                let any = vec![format!("positionCaseInsensitiveUTF8({column}, ?) > 0"); filter.values.len()].join(" OR ");
                sql.push_str(&format!(" AND ({any})"));
            }
        }
        params.extend(filter.values.iter().cloned());
    }
    if !dims.is_empty() {
        // Day expressions need their time zone again in GROUP BY.
        let mut group = Vec::new();
        for d in &query.dimensions {
            group.push(dimension_expr(*d));
            if d.is_time() {
                params.push(timezone.to_string());
            }
        }
        sql.push_str(&format!(" GROUP BY {}", group.join(", ")));
    }
    (sql, params)
}
