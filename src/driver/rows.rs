//! The driver's copy of every scoring row: what evaluation and the from-scratch reference
//! read, kept equal to what the engine was sent.

use crate::data::{ItemIdx, UserIdx};

/// Flat copies of all user and item scoring rows.
#[derive(Clone, Debug)]
pub struct RowMirror {
    row_len: usize,
    users: Vec<f32>,
    items: Vec<f32>,
}

impl RowMirror {
    /// Mirrors `users` and `items`, each a concatenation of rows of `row_len` floats.
    pub fn new(row_len: usize, users: Vec<f32>, items: Vec<f32>) -> Self {
        Self {
            row_len,
            users,
            items,
        }
    }

    /// Users with a row.
    pub fn n_users(&self) -> usize {
        self.users.len() / self.row_len
    }

    /// Items with a row.
    pub fn n_items(&self) -> usize {
        self.items.len() / self.row_len
    }

    /// The row of `user`.
    pub fn user(&self, user: UserIdx) -> &[f32] {
        let start = user as usize * self.row_len;
        &self.users[start..start + self.row_len]
    }

    /// The row of `item`.
    pub fn item(&self, item: ItemIdx) -> &[f32] {
        let start = item as usize * self.row_len;
        &self.items[start..start + self.row_len]
    }

    /// Overwrites (or adds) the rows of `ids` with `rows` (their concatenation).
    pub fn set_users(&mut self, ids: &[UserIdx], rows: &[f32]) {
        set_rows(&mut self.users, self.row_len, ids, rows);
    }

    /// Overwrites (or adds) the rows of `ids` with `rows` (their concatenation).
    pub fn set_items(&mut self, ids: &[ItemIdx], rows: &[f32]) {
        set_rows(&mut self.items, self.row_len, ids, rows);
    }

    /// `(id, row)` pairs for the engine.
    pub fn user_entries(&self, ids: &[UserIdx]) -> Vec<(UserIdx, Vec<f32>)> {
        ids.iter().map(|&u| (u, self.user(u).to_vec())).collect()
    }

    /// `(id, row)` pairs for the engine.
    pub fn item_entries(&self, ids: &[ItemIdx]) -> Vec<(ItemIdx, Vec<f32>)> {
        ids.iter().map(|&i| (i, self.item(i).to_vec())).collect()
    }
}

/// Writes `rows` at `ids`, growing the table (with zeros) for ids past its end.
fn set_rows(table: &mut Vec<f32>, row_len: usize, ids: &[u32], rows: &[f32]) {
    for (id, row) in ids.iter().zip(rows.chunks_exact(row_len)) {
        let start = *id as usize * row_len;
        if table.len() < start + row_len {
            table.resize(start + row_len, 0.0);
        }
        table[start..start + row_len].copy_from_slice(row);
    }
}
