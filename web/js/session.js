// The signed-in user's token and profile, in sessionStorage: they end with the browser tab.

const TOKEN_KEY = "telehub.token";
const USER_KEY = "telehub.user";

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  get user() {
    try {
      return JSON.parse(sessionStorage.getItem(USER_KEY) || "null");
    } catch {
      return null;
    }
  },
  save(token, user) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, JSON.stringify(user));
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
  },
};

export const isReader = (user) => Boolean(user) && (user.role === "reader" || user.role === "admin");
export const isClinic = (user) => Boolean(user) && user.role === "clinic";
export const isAdmin = (user) => Boolean(user) && user.role === "admin";
