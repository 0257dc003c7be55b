//! Running SQL that comes from workflow files (`[source]`, `[reconcile]`): named parameters
//! (`:key`, `:limit`) rewritten per backend and always bound, never spliced, and result columns
//! read by name into loosely typed values.

use std::collections::HashMap;

use sqlx::{Column, Row};

use crate::workflow::{bind_params, ParamStyle};

/// One value of a result column or a parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

impl SqlValue {
    /// The value as text (`None` for NULL).
    pub fn text(&self) -> Option<String> {
        match self {
            SqlValue::Null => None,
            SqlValue::Int(i) => Some(i.to_string()),
            SqlValue::Float(f) => Some(f.to_string()),
            SqlValue::Text(s) => Some(s.clone()),
            SqlValue::Bool(b) => Some(b.to_string()),
        }
    }

    /// Truthiness for flag columns: true, non-zero, 't', 'true', '1'.
    pub fn truthy(&self) -> bool {
        match self {
            SqlValue::Null => false,
            SqlValue::Int(i) => *i != 0,
            SqlValue::Float(f) => *f != 0.0,
            SqlValue::Bool(b) => *b,
            SqlValue::Text(s) => matches!(s.as_str(), "t" | "true" | "TRUE" | "1"),
        }
    }
}

/// A result row: column name to value.
pub type NamedRow = HashMap<String, SqlValue>;

fn value_for<'a>(params: &'a [(&str, SqlValue)], name: &str) -> &'a SqlValue {
    params
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or(&SqlValue::Null)
}

macro_rules! bind_value {
    ($q:expr, $v:expr) => {
        match $v {
            SqlValue::Null => $q.bind(Option::<String>::None),
            SqlValue::Int(i) => $q.bind(*i),
            SqlValue::Float(f) => $q.bind(*f),
            SqlValue::Text(s) => $q.bind(s.clone()),
            SqlValue::Bool(b) => $q.bind(*b),
        }
    };
}

pub(crate) async fn fetch_pg(
    pool: &sqlx::PgPool,
    sql: &str,
    params: &[(&str, SqlValue)],
) -> Result<Vec<NamedRow>, sqlx::Error> {
    let (text, names) = bind_params(sql, ParamStyle::Dollar);
    let mut q = sqlx::query(&text);
    for n in &names {
        q = bind_value!(q, value_for(params, n));
    }
    let rows = q.fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|r| {
            r.columns()
                .iter()
                .map(|c| {
                    let i = c.ordinal();
                    let v = if let Ok(v) = r.try_get::<Option<String>, _>(i) {
                        v.map(SqlValue::Text)
                    } else if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                        v.map(SqlValue::Int)
                    } else if let Ok(v) = r.try_get::<Option<i32>, _>(i) {
                        v.map(|x| SqlValue::Int(x.into()))
                    } else if let Ok(v) = r.try_get::<Option<bool>, _>(i) {
                        v.map(SqlValue::Bool)
                    } else if let Ok(v) = r.try_get::<Option<f64>, _>(i) {
                        v.map(SqlValue::Float)
                    } else {
                        None
                    };
                    (c.name().to_string(), v.unwrap_or(SqlValue::Null))
                })
                .collect()
        })
        .collect())
}

pub(crate) async fn fetch_sqlite(
    pool: &sqlx::SqlitePool,
    sql: &str,
    params: &[(&str, SqlValue)],
) -> Result<Vec<NamedRow>, sqlx::Error> {
    let (text, names) = bind_params(sql, ParamStyle::Question);
    let mut q = sqlx::query(&text);
    for n in &names {
        q = bind_value!(q, value_for(params, n));
    }
    let rows = q.fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|r| {
            r.columns()
                .iter()
                .map(|c| {
                    let i = c.ordinal();
                    let v = if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                        v.map(SqlValue::Int)
                    } else if let Ok(v) = r.try_get::<Option<f64>, _>(i) {
                        v.map(SqlValue::Float)
                    } else if let Ok(v) = r.try_get::<Option<String>, _>(i) {
                        v.map(SqlValue::Text)
                    } else {
                        None
                    };
                    (c.name().to_string(), v.unwrap_or(SqlValue::Null))
                })
                .collect()
        })
        .collect())
}
