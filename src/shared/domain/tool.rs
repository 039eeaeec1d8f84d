//! The names of the memory tools: the one list the memory server registers, the daemon's
//! endpoints call, and the offline model picks from.

/// Stores a memory.
pub const STORE_MEMORY: &str = "store_memory";
/// Searches (or lists) a user's memories.
pub const RETRIEVE_MEMORIES: &str = "retrieve_memories";
/// Fetches one memory whole.
pub const GET_MEMORY: &str = "get_memory";
/// Deletes one memory (capped per turn by `conversation.max_deletes_per_turn`).
pub const DELETE_MEMORY: &str = "delete_memory";
/// Lists a user's tags with counts.
pub const LIST_TAGS: &str = "list_tags";

/// Every memory tool, in the order the server lists them.
pub const ALL: [&str; 5] = [
    STORE_MEMORY,
    RETRIEVE_MEMORIES,
    GET_MEMORY,
    DELETE_MEMORY,
    LIST_TAGS,
];
